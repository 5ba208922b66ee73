"""Domain code shared by the Scones Unlimited Lambda functions.

The modules here know nothing about Lambda events: handlers parse events and call
these functions with plain values and injected boto3 clients.
"""
