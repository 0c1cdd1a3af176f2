"""ASR inference-backend workbench: export, build, serve and measure CTC speech models."""

__version__ = "0.1.0"
