"""tritonfleet: a Hugging Face text classifier, converted, packed into a Triton model repository and served."""

__version__ = "0.1.0"
