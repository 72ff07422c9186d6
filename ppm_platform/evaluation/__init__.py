"""The evaluation report: the PPM paper's Table 2 on the fixed protocol of DESIGN.md §5, after the baselines a
practitioner runs first, and the item-cold protocol.

Rows (the last five are Gao et al., "PPM: A Pre-trained Plug-in Model for Click-through Rate Prediction",
WWW'24 companion, Table 2):

============== ==============================================================================================
``Popularity`` the item's smoothed train-window click / order rate, no model
               (:func:`~ppm_platform.training.baselines.popularity_scores`)
``GBDT``       gradient-boosted trees on the counters, side features and categories, no PPM
               (:func:`~ppm_platform.training.baselines.train_gbdt`; grid selected on validation)
``Base``       IDRec + MMoE (:func:`~ppm_platform.training.urm_train.train_ctr_model`, ``use_ppm=False``)
``QM&EP``      the item's frozen ME features alone (:class:`~ppm_platform.models.qmep.QMEP`), trained here
``PPM``        the pre-trained ID-free PPM scored directly
               (:func:`~ppm_platform.training.ppm_train.predict_ppm`); it has a click head only, so its click
               probability is also its order score
``Base+QM&EP`` IDRec with the ME features as extra inputs, two-stage (:class:`~ppm_platform.models.qmep.BaseQMEP`)
``URM``        IDRec + PPM top (warm-started readout over the cached PPM features) + MMoE
============== ==============================================================================================

Modules, in the order a report is made:

* :mod:`~ppm_platform.evaluation.protocol`: what is compared (rows, windows, metrics, targets), the split and
  its checks, the seeds, and the protocol record written into the report.
* :mod:`~ppm_platform.evaluation.harness`: trains and scores each row (:func:`~.harness.run_evaluation`).
* :mod:`~ppm_platform.evaluation.aggregate`: per-seed runs -> mean / std records, paired differences, the
  targets, and the item-cold protocol's summary over draws.
* :mod:`~ppm_platform.evaluation.report`: ``report.json`` / ``report.md`` (plots drawn by
  :mod:`ppm_platform.reporting.plots`).
* :mod:`~ppm_platform.evaluation.item_cold`: the data of one item-cold draw (held-out items, their inputs).

Everything here sits above :mod:`ppm_platform.training` and below :mod:`ppm_platform.pipeline`; no Dagster.
"""
