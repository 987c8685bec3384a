"""The embedded synthetic chest X-ray dataset (``motor synth``): studies whose images show the
findings their reports describe.

* :mod:`~pipelines.data.synthetic.generator`: :func:`generate` writes a set, :func:`make_study` makes one study;
* :mod:`~pipelines.data.synthetic.scene`: the findings drawn for a study, the one source of
  everything else;
* :mod:`~pipelines.data.synthetic.render`: the radiograph;
* :mod:`~pipelines.data.synthetic.report_writer` with :mod:`~pipelines.data.synthetic.phrasebook`
  (templates read from ``phrasebook.yaml`` beside it): the report and its gold RadGraph record;
* :mod:`~pipelines.data.synthetic.labels`: the CheXpert and GK labels;
* :mod:`~pipelines.data.synthetic.vqa`: the question-answer pairs.
"""
from pipelines.data.synthetic.generator import (
    GENERATOR,
    SUMMARY_FILE,
    SyntheticStudy,
    SyntheticSummary,
    assign_splits,
    generate,
    make_study,
    study_id,
)

__all__ = [
    "GENERATOR",
    "SUMMARY_FILE",
    "SyntheticStudy",
    "SyntheticSummary",
    "assign_splits",
    "generate",
    "make_study",
    "study_id",
]
