"""``scones review``: a local web page over ``scones_core.review``.

``target`` finds the results table, the bucket and the review parameters of a
deployed stack (on AWS or the offline stack, through CloudFormation alike);
``app`` serves the page and its small JSON API; ``page`` is the page.
"""
