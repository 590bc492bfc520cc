"""Concept-aware geolocation networks.

A trainable top of a frozen image encoder, the concept bottleneck and prototype classifier, the GPS
adapter, the cross-attention geolocation head, their losses, and the text encoders that anchor concept
prototypes.

- :mod:`.backbone`: :class:`~.backbone.SplitBackbone` (frozen stem + top ``N`` trainable blocks).
- :mod:`.heads`: bottleneck, prototype classifier, GPS adapter, :class:`~.heads.ConceptGeoHead`.
- :mod:`.losses`: InfoNCE, focal loss, hierarchy consistency.
- :mod:`.text`: concept-name templates and text encoders (built-in TF-IDF + SVD, CLIP from a folder).
"""
