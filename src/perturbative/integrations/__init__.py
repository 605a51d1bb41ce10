"""Thin layers over :class:`perturbative.Recorder` for the training loops our users run:

* :class:`~perturbative.integrations.huggingface.RecorderCallback`: a ``transformers``
  ``TrainerCallback`` (``pip install "perturbative[hf]"``);
* :class:`~perturbative.integrations.lightning.RecorderCallback`: a Lightning ``Callback``
  (``pip install "perturbative[lightning]"``).

Import them from their modules; each needs its framework installed.
"""
