"""Retraining steps that run in Lambda and, unchanged, in ``scones retrain`` offline.

* :mod:`.dataset`: assemble the training channels (the original training images plus
  the labelled-data prefix the review page writes) as pinned SageMaker manifests.
* :mod:`.gate`: decide from the evaluation report whether a candidate may replace
  the production model.
* :mod:`.evaluation`: read that report, naming its S3 URI when it is missing or not JSON.
* :mod:`.outcome`: the small item a retraining run leaves in the monitor's state table.
"""
