"""Data of the training pipelines: the embedded synthetic dataset, manifests, adapters and datasets.

* :mod:`pipelines.data.synthetic`: generate the synthetic chest X-ray set (``motor synth``);
  :mod:`~pipelines.data.scene`, :mod:`~pipelines.data.render`, :mod:`~pipelines.data.report_writer`,
  :mod:`~pipelines.data.phrasebook`, :mod:`~pipelines.data.labels` and :mod:`~pipelines.data.vqa`
  are its parts.
* :mod:`pipelines.data.manifest`: the JSON-lines manifest format (read, validate, write).
* :mod:`pipelines.data.image_check`: check that every image of a manifest decodes, cached beside it.
* :mod:`pipelines.data.adapters`: IU-Xray, MIMIC-CXR, VQA-RAD and SLAKE layouts → manifests.
* :mod:`pipelines.data.datasets` and :mod:`pipelines.data.transforms`: PyTorch datasets over manifests.
"""
