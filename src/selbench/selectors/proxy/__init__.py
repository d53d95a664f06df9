"""The proxy layer shared by the proxy-based selectors (G-SNR and its ablations, GrADS-style,
SPICE, IFD...): ``config`` (the ensemble's settings), ``scoring`` (tokenized pools, batches,
per-example losses), ``pergrad`` (per-example gradients from one batched backward),
``projections`` (seeded random projections) and ``profile`` (the cached gradient profile).

torch, PEFT and safetensors are imported inside the functions that use them: ``bench ls``
and ``bench plan`` import every selector (and so this package) and must not pay for torch.
"""
