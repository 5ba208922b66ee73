"""What the product costs on AWS: a dated price table, the workflow's shape read from the
real ASL and template, and measured handler durations and log bytes (``scones cost``)."""
