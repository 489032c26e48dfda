"""The face pipeline, torch-free: every step from photo bytes to a match decision, shared by the service,
the offline package (crop cache, evaluation, publishing), the CLI and the benchmarks.

One request, one module per step: ``decode`` (bytes → RGB, EXIF, pixel cap) → ``detect`` (MTCNN on ONNX
Runtime) → face choice and quality gates (``spec.PreprocessSpec``, applied by ``pipeline``) → ``align``
(5-point similarity → 112×112 template) → ``embed`` (a published ONNX variant) → ``decision`` (score against
the variant's calibrated threshold). ``pipeline.FacePipeline`` chains them from one spec; ``evaluation`` is
the pair-list harness (LFW protocol, 10-fold metrics, ROC); ``variants`` the registry of loaded embedders.

Imports only ``model_store`` of ours, never torch, ``service`` or the offline package.
"""
