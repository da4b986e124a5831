-- tritonfleet: read which model a gRPC call names, by parsing its protobuf message (HAProxy sample fetches).
--
-- ModelReady, ModelMetadata and ModelInfer name their model in field 1 of the request message. Protobuf keeps the
-- last value of a field that is repeated, and fields may come in any order, so a check of the message's first
-- bytes can be walked around (a public name first, an internal one after it). These fetches walk the whole
-- message of the request's body instead, and say "no" to anything they cannot read for certain:
--
--   lua.tritonfleet_grpc_model  the model's name when the body is exactly one uncompressed gRPC message whose
--                               field 1 appears once, as a string; "" otherwise (a field 1 repeated or of another
--                               wire type, a truncated or over-long field, a compressed or partial message, a
--                               second message, groups, trailing bytes)
--   lua.tritonfleet_grpc_size   the size the gRPC message header declares, 5 bytes included (0: no header)
--
-- The load balancer buffers the whole request before it asks (wait-for-body, with a buffer larger than the biggest
-- request it admits), so a message that is not whole here was either too big or not sent in time: refused.

local MAX_TAG = 4294967295     -- protobuf reads a tag as 32 bits: a larger one is no tag
local MAX_LENGTH = 2147483647  -- and a field's length as a positive 32-bit int

-- A varint at pos (1-based) of s, at most max_bytes long, and the position after it; nil if there is none.
local function varint(s, pos, last, max_bytes)
  local value, scale = 0, 1
  for p = pos, math.min(last, pos + max_bytes - 1) do
    local byte = s:byte(p)
    value = value + (byte % 128) * scale
    if byte < 128 then
      return value, p + 1
    end
    scale = scale * 128
  end
  return nil
end

-- The declared length of the gRPC message in body (its 5-byte header: compressed flag, big-endian length).
local function declared_length(body)
  if #body < 5 then
    return nil
  end
  local b2, b3, b4, b5 = body:byte(2, 5)
  return ((b2 * 256 + b3) * 256 + b4) * 256 + b5
end

-- The string in field 1 of the one protobuf message in body, or nil when that is not certain.
local function model_name(body)
  local length = declared_length(body)
  if length == nil or body:byte(1) ~= 0 or #body ~= 5 + length then
    return nil  -- no header, compressed, partial, or more than one message
  end
  local pos, last, name = 6, #body, nil
  while pos <= last do
    local tag
    tag, pos = varint(body, pos, last, 5)
    if tag == nil or tag > MAX_TAG then
      return nil
    end
    local field, wire = tag // 8, tag % 8
    if field == 0 or (field == 1 and (wire ~= 2 or name ~= nil)) then
      return nil  -- field 0 does not exist; field 1 must be one string
    end
    if wire == 0 then
      local value
      value, pos = varint(body, pos, last, 10)
      if value == nil then
        return nil
      end
    elseif wire == 1 then
      pos = pos + 8
    elseif wire == 5 then
      pos = pos + 4
    elseif wire == 2 then
      local size
      size, pos = varint(body, pos, last, 5)
      if size == nil or size > MAX_LENGTH or size > last - pos + 1 then
        return nil
      end
      if field == 1 then
        name = body:sub(pos, pos + size - 1)
      end
      pos = pos + size
    else
      return nil  -- groups (3, 4) and the wire types that do not exist (6, 7)
    end
    if pos > last + 1 then
      return nil  -- a fixed-size field cut short
    end
  end
  return name
end

-- Sample fetches, not converters: a converter's input is cast to a string, which ends at the first NUL byte (and
-- a gRPC message starts with one).
core.register_fetches("tritonfleet_grpc_model", function(txn)
  return model_name(txn.f:req_body() or "") or ""
end)
core.register_fetches("tritonfleet_grpc_size", function(txn)
  local length = declared_length(txn.f:req_body() or "")
  return length and 5 + length or 0
end)
