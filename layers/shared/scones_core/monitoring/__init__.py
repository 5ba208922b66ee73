"""Monitoring and retraining: what the scheduled monitor Lambda does, without Lambda.

The monitor reads one window of the endpoint's captured traffic, counts the
workflow's outcomes in the results table, reads Model Monitor reports when they
exist, compares the label mix with the training baseline, publishes the numbers
and starts retraining when quality drops. Everything works without a Model
Monitor schedule, because Model Monitor is closed to new AWS customers.

Modules:
    settings       the monitor's environment, validated once at cold start
    locations      ``s3://`` URIs and paginated S3 listings
    timestamps     parsing and formatting the ISO 8601 times the contracts use
    capture        SageMaker data-capture JSON Lines -> ``CaptureRecord`` (unique by eventId)
    data_warnings  skipped capture lines and unreadable reports, named by file and line
    statistics     percentiles and confidence summaries, without numpy
    results        outcome counts from the results table's status index
    model_monitor  Model Monitor executions and ``constraint_violations.json``
    drift          the training baseline and the label-mix distance from it
    window_report  one window's numbers and the alerts they raise
    metrics        the CloudWatch metrics a report becomes
    retraining     starting retraining at most once per cooldown, backing off
    service        the whole run, given settings, clients and a window end
"""
