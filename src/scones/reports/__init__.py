"""Reports rendered from what the running system recorded (``scones report``)."""
