"""How the toy model zoo is built (the runtime — resolve_model and the weight folders — is tdd_video.zoo).

    python -m tools.zoo.build_svd  --config configs/toy/pretrain_svd.yaml     # toy-svd teacher (resumable)
    python -m tools.zoo.build_sdxl --config configs/toy/pretrain_sdxl.yaml    # toy-sdxl teacher (resumable)
    python -m tools.zoo.sdxl_student --config configs/toy/tdd_sdxl_zoo.yaml   # toy-sdxl's TDD student

The stages use the engine's recipe loader (tdd_video.engine.config), fp32 EMA (engine.ema) and lr
schedules (engine.lr); run them from the repository root.
"""
