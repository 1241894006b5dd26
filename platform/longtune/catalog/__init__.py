"""The model catalog: which models exist, who may use them, and how a finished job adds one.

- ``models``: ``BaseModel`` (staff-registered, public or private to one org) and
  ``FineTunedModel`` (an org's trained artifact, with its ``ContextSpec`` in ``context``);
  tables keep their ``finetuning_*`` names.
- ``resolution``: ``resolve_model`` (name -> rows, 404 ``model_not_found`` otherwise), the
  visibility querysets, and ``serves_as_adapter`` -- the one served-as-adapter decision.
- ``services``: ``publish_fine_tuned_model``, called by the training worker once its upload
  is done (the worker reports; the catalog creates the model and result-File rows).
- ``views``: ``/v1/models`` (``CatalogModelViewSet``); ``admin``; ``bootstrap_demo``.
"""
