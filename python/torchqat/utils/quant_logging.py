"""pytorch-quantization's logging workaround: drop the handlers of the root logger."""
import logging

__all__ = ["reset_logger_handler"]


def reset_logger_handler():
    """Removes every handler of the root logger (for code that installed a conflicting format)."""
    root = logging.getLogger()
    while root.handlers:
        root.removeHandler(root.handlers[0])
