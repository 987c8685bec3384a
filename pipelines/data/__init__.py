"""Data of the training pipelines: the embedded synthetic dataset, manifests, adapters and datasets.

* :mod:`pipelines.data.synthetic`: the sub-package that generates the synthetic chest X-ray set
  (``motor synth``).
* :mod:`kg.manifest` (in the toolkit, which reads it too): the JSON-lines manifest format.
* :mod:`pipelines.data.image_check`: check that every image of a manifest decodes, cached beside it.
* :mod:`pipelines.data.adapters`: IU-Xray, MIMIC-CXR, VQA-RAD and SLAKE layouts → manifests.
* :mod:`pipelines.data.datasets` and :mod:`pipelines.data.transforms`: PyTorch datasets over manifests.
"""
