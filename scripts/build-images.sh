#!/usr/bin/env bash
# shellcheck disable=SC2016  # mmdebstrap hooks are snippets run with "$1" = the new root: single quotes on purpose
# Build the project's container images on this machine. No registry can be pulled from, so every image starts
# from a Debian 12 root file system made by mmdebstrap.
#
#   scripts/build-images.sh [IMAGE...]     IMAGE: debian12-systemd debian12-base tritonserver-cpu convert (default: all)
#   scripts/build-images.sh convert-wheelhouse   only the conversion image's wheels (build/images/wheelhouse-convert)
#
# Idempotent: each image carries a label with the sha256 of its inputs (package lists, Dockerfile, wheel pins,
# the base image's id, the project's sources); an image whose label matches is not rebuilt.
# FORCE=1 rebuilds anyway. Timings are printed per image.
# TRITONFLEET_CONVERT_IMAGE=NAME builds the conversion image under another name than docker/images.yml's (a test
# build beside the fleet's image; the same inputs give the same image, from the layer cache).
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_MIRROR=${TRITONFLEET_DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_SECURITY_MIRROR=${TRITONFLEET_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
SUITE=bookworm
PYTRITON_VERSION=${TRITONFLEET_PYTRITON_VERSION:-0.7.0}
PIP=${PIP:-.venv/bin/pip}
PYTHON=${PYTHON:-.venv/bin/python}
WORK=build/images
LABEL=org.tritonfleet.inputs-sha256
FORCE=${FORCE:-0}

# shellcheck source=scripts/lib.sh
. scripts/lib.sh
SYSTEMD_IMAGE=$(image debian12_systemd)
BASE_IMAGE=$(image debian12_base)
TRITON_IMAGE=$(image tritonserver_cpu)
CONVERT_IMAGE=${TRITONFLEET_CONVERT_IMAGE:-$(image convert)}
# The conversion image's lock for this machine's base (Python 3.11): the CPU torch wheel and the demo weights included.
CONVERT_LOCK=docker/conversion-requirements/local.txt
CONVERT_WHEELHOUSE=$WORK/wheelhouse-convert

# Packages of the systemd image: what systemd as PID 1 and Ansible's modules (apt, systemd, user, ...) need, sshd
# (the local fleet's hosts are reached over SSH, like production's), and a C compiler, as a GPU host has it for its
# NVIDIA driver (DKMS): the triton_server role builds the admin key's loader on each host.
SYSTEMD_PACKAGES=systemd,systemd-sysv,dbus,python3,python3-apt,ca-certificates,iproute2,procps,sudo,gnupg,curl,pciutils,kmod,less,openssh-server,gcc,libc6-dev
# Packages of the plain base (tritonserver-cpu, convert): python 3.11 with its shared library and venv support.
BASE_PACKAGES=python3,python3-venv,libpython3.11,ca-certificates,zlib1g,libexpat1
# dpkg drops documentation, man pages and locales: smaller images, faster imports.
DPKG_EXCLUDES=(--dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-exclude=/usr/share/info/*')

log() { printf '[build-images %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# The key of the inputs on stdin, by the project's one key function (tritonfleet.release.content_key).
inputs_hash() { "$PYTHON" -c 'import sys; from tritonfleet.release import content_key; print(content_key(sys.stdin.read()))'; }

current_label() {
  docker image inspect --format "{{ index .Config.Labels \"$LABEL\" }}" "$1" 2>/dev/null || true
}

up_to_date() {  # IMAGE HASH
  [ "$FORCE" != 1 ] && [ "$(current_label "$1")" = "$2" ]
}

prune_build_stages() {  # STAGE: the untagged images of a Dockerfile's build stage (LABEL org.tritonfleet.stage=STAGE)
  docker image prune --force --filter "label=org.tritonfleet.stage=$1" >/dev/null
}

image_id() { docker image inspect --format '{{.Id}}' "$1"; }

mmdebstrap_image() {  # IMAGE PACKAGES CMD [HOOK...]
  local image=$1 packages=$2 cmd=$3 hash tar start
  shift 3
  local hooks=("$@")
  hash=$(printf '%s\n' "recipe=3" "${hooks[@]}" "$SUITE" "$DEBIAN_MIRROR" "$DEBIAN_SECURITY_MIRROR" "$packages" "$cmd" \
    "${DPKG_EXCLUDES[*]}" | inputs_hash)
  if up_to_date "$image" "$hash"; then log "$image is up to date"; return; fi
  command -v mmdebstrap >/dev/null || { echo "build-images: mmdebstrap is missing (scripts/setup.sh installs it)" >&2; exit 1; }
  start=$SECONDS
  tar="$WORK/$(echo "${image%%:*}" | tr / _).tar"
  log "mmdebstrap $SUITE (minbase) for $image"
  mmdebstrap --quiet --variant=minbase --include="$packages" "${DPKG_EXCLUDES[@]}" \
    --customize-hook='rm -f "$1"/etc/machine-id "$1"/var/lib/dbus/machine-id; touch "$1"/etc/machine-id' \
    "${hooks[@]}" --customize-hook='rm -rf "$1"/var/cache/apt/*.bin' \
    "$SUITE" "$tar" \
    "deb $DEBIAN_MIRROR $SUITE main" "deb $DEBIAN_MIRROR $SUITE-updates main" \
    "deb $DEBIAN_SECURITY_MIRROR $SUITE-security main"
  log "mmdebstrap done in $((SECONDS - start)) s ($(du -h "$tar" | cut -f1)); importing"
  docker import --change "CMD $cmd" --change "ENV container=docker" \
    --change "LABEL $LABEL=$hash" "$tar" "$image" >/dev/null
  rm -f "$tar"
  log "$image built in $((SECONDS - start)) s"
}

build_systemd() {
  # systemd as PID 1: Molecule's platforms and the local fleet hosts. STOPSIGNAL is set at run time
  # (docker import does not take it): fleet.sh and molecule stop the containers with SIGRTMIN+3.
  # The apt lists stay in the image, as on a real host: Ansible's apt module (cache_valid_time) trusts them.
  # The login user deploy (uid 2000, passwordless sudo, as a provisioned production host has it); no host keys and
  # sshd off: scripts/fleet.sh gives each fleet host its own host key, the controller's public key and sshd at boot
  # (Molecule's containers, reached with the docker connection, run no sshd).
  mmdebstrap_image "$SYSTEMD_IMAGE" "$SYSTEMD_PACKAGES" '["/lib/systemd/systemd"]' --skip=cleanup/apt/lists \
    --customize-hook='rm -f "$1"/etc/ssh/ssh_host_*' \
    --customize-hook='rm -f "$1"/etc/systemd/system/multi-user.target.wants/ssh.service "$1"/etc/systemd/system/sshd.service' \
    --customize-hook='chroot "$1" useradd --create-home --uid 2000 --user-group --shell /bin/bash deploy' \
    --customize-hook='echo "deploy ALL=(ALL:ALL) NOPASSWD: ALL" >"$1"/etc/sudoers.d/deploy && chmod 0440 "$1"/etc/sudoers.d/deploy'
}

build_base() {
  # No apt lists: the Dockerfiles install nothing with apt (wheels only).
  mmdebstrap_image "$BASE_IMAGE" "$BASE_PACKAGES" '["/bin/bash"]' --customize-hook='rm -rf "$1"/var/lib/apt/lists/*'
}

# Download wheels into a build context's wheelhouse with the host's pip configuration (which reaches the
# local mirrors); inside `docker build` pip then installs with --no-index from that directory.
wheelhouse() {  # DIR REQUIREMENT...
  local dir=$1; shift
  mkdir -p "$dir"
  # The images run the same Python (3.11) on the same platform as this machine (Debian 12, x86_64).
  "$PIP" download --quiet --disable-pip-version-check --prefer-binary --dest "$dir" "$@"
}

build_triton() {
  build_base
  local ctx=$WORK/tritonserver-cpu hash start
  hash=$( { printf '%s\n' "recipe=1" "$PYTRITON_VERSION" "$(image_id "$BASE_IMAGE")"; \
    cat docker/tritonserver-cpu.Dockerfile docker/tritonserver-cpu.requirements.txt; } | inputs_hash)
  if up_to_date "$TRITON_IMAGE" "$hash"; then log "$TRITON_IMAGE is up to date"; return; fi
  start=$SECONDS
  rm -rf "$ctx"; mkdir -p "$ctx/wheels"
  log "downloading nvidia-pytriton==$PYTRITON_VERSION and the python models' wheels"
  "$PIP" download --quiet --disable-pip-version-check --no-deps --dest "$ctx/pytriton" "nvidia-pytriton==$PYTRITON_VERSION"
  wheelhouse "$ctx/wheels" -r docker/tritonserver-cpu.requirements.txt
  # Lay the server out like NVIDIA's image: /opt/tritonserver/{bin,backends,caches,lib}.
  "$PYTHON" - "$ctx" <<'PY'
import pathlib, shutil, sys, zipfile
ctx = pathlib.Path(sys.argv[1])
wheel = next((ctx / "pytriton").glob("nvidia_pytriton-*.whl"))
out = ctx / "tritonserver"
with zipfile.ZipFile(wheel) as zf:
    for info in zf.infolist():
        name = info.filename
        if name.startswith("pytriton/tritonserver/"):
            rel = name[len("pytriton/tritonserver/"):]
        elif name.startswith("nvidia_pytriton.libs/"):
            rel = "lib/" + name[len("nvidia_pytriton.libs/"):]
        else:
            continue
        if not rel or name.endswith("/") or "__pycache__" in rel:
            continue
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(info) as src, open(dest, "wb") as dst:
            shutil.copyfileobj(src, dst)
        if (info.external_attr >> 16) & 0o111 or rel.startswith(("bin/", "python_backend_stubs/")) or ".so" in rel:
            dest.chmod(0o755)
# The python backend runs models with the stub built for the image's Python (Debian 12: 3.11).
shutil.copy2(out / "python_backend_stubs/3.11/triton_python_backend_stub", out / "backends/python/")
shutil.rmtree(out / "python_backend_stubs")
PY
  rm -rf "$ctx/pytriton"
  cp docker/tritonserver-cpu.Dockerfile docker/tritonserver-cpu.requirements.txt "$ctx/"
  log "docker build $TRITON_IMAGE"
  docker build --quiet -f "$ctx/tritonserver-cpu.Dockerfile" --build-arg "BASE=$BASE_IMAGE" \
    --label "$LABEL=$hash" --label "org.tritonfleet.triton-version=${TRITON_IMAGE##*:}" -t "$TRITON_IMAGE" "$ctx" >/dev/null
  rm -rf "$ctx"
  prune_build_stages build-tritonserver
  log "$TRITON_IMAGE built in $((SECONDS - start)) s ($(docker image inspect --format '{{.Size}}' "$TRITON_IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
}

# The conversion image's build context and inputs are made by `tritonfleet image-context`
# (src/tritonfleet/conversion_image.py), the one owner of both: the model_conversion role (image source `build`)
# makes the same context, computes the same label and so builds the same image from the same build arguments.
convert_inputs() {  # BUILD-ARGS...: the image's inputs (its label's value)
  "$PYTHON" -m tritonfleet.cli image-context --project . "$@" \
    | "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["inputs"])'
}

# The wheelhouse is kept between builds (build/images/wheelhouse-convert) and downloaded again only when the lock
# changes: the docker build then reuses its cached dependency layers, and a change of src/ costs only the last
# layers. pip checks every file against the lock's hashes here, and again in the image. A target of its own too:
# a build from the same inputs elsewhere (the model_conversion role's, in Molecule) needs these wheels in its
# context even where this clone found the image up to date and never downloaded them.
convert_wheelhouse() {
  local lock_sum
  lock_sum=$(sha256sum <"$CONVERT_LOCK")
  if [ "$(cat "$CONVERT_WHEELHOUSE/.lock-sha256" 2>/dev/null)" = "$lock_sum" ]; then return; fi
  log "downloading the conversion wheels of $CONVERT_LOCK (torch CPU, transformers, onnx, ...)"
  rm -rf "$CONVERT_WHEELHOUSE.part.$$"
  wheelhouse "$CONVERT_WHEELHOUSE.part.$$" --require-hashes --only-binary=:all: -r "$CONVERT_LOCK"
  printf '%s\n' "$lock_sum" >"$CONVERT_WHEELHOUSE.part.$$/.lock-sha256"
  rm -rf "$CONVERT_WHEELHOUSE"
  mv "$CONVERT_WHEELHOUSE.part.$$" "$CONVERT_WHEELHOUSE"
}

build_convert() {
  build_base
  local ctx hash start args
  # The build arguments, which are inputs of the label: the base by its id (a rebuilt base rebuilds this image), the
  # local lock, and the Dockerfile's default PIP_OPTIONS (offline, from the wheelhouse in the context).
  args=(--build-arg "BASE=$(image_id "$BASE_IMAGE")" --build-arg REQUIREMENTS=local)
  hash=$(convert_inputs "${args[@]}")
  if up_to_date "$CONVERT_IMAGE" "$hash"; then log "$CONVERT_IMAGE is up to date"; return; fi
  start=$SECONDS
  convert_wheelhouse
  ctx=$WORK/context-$(printf '%s' "$CONVERT_IMAGE" | tr -c 'A-Za-z0-9._-' '_')
  [ "$(convert_inputs "${args[@]}" --wheelhouse "$CONVERT_WHEELHOUSE" --output "$ctx")" = "$hash" ] \
    || { echo "build-images: the project changed during the build of $CONVERT_IMAGE; run it again" >&2; exit 1; }
  log "docker build $CONVERT_IMAGE ($(du -sh "$ctx/wheels" | cut -f1) of wheels)"
  docker build --quiet -f "$ctx/conversion.Dockerfile" "${args[@]}" --label "$LABEL=$hash" -t "$CONVERT_IMAGE" "$ctx" \
    >/dev/null
  rm -rf "$ctx"
  log "$CONVERT_IMAGE built in $((SECONDS - start)) s ($(docker image inspect --format '{{.Size}}' "$CONVERT_IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
}

main() {
  scripts/docker-up.sh >/dev/null
  mkdir -p "$WORK"
  local targets=("$@") target total
  [ "${#targets[@]}" -gt 0 ] || targets=(debian12-systemd debian12-base tritonserver-cpu convert)
  total=$SECONDS
  for target in "${targets[@]}"; do
    case "$target" in
      debian12-systemd) build_systemd ;;
      debian12-base) build_base ;;
      tritonserver-cpu) build_triton ;;
      convert) build_convert ;;
      convert-wheelhouse) convert_wheelhouse ;;
      *) echo "build-images: unknown image '$target'" >&2; exit 2 ;;
    esac
  done
  log "done in $((SECONDS - total)) s"
}

# Everything above is read before anything runs: editing this file during a build cannot break that build.
main "$@"
