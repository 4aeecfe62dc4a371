"""Pretraining: the paper's recipes under Accelerate, every scheduled checkpoint pushed as a Hub revision.

``config`` (options), ``recipes`` (timm transforms/Mixup/losses/optimizer/scheduler), ``loop`` (training),
``state`` (resume, signals), ``publisher`` (background pushes, pending folder), ``card`` (model cards),
``hooks`` (on_checkpoint callbacks and CLI extensions).
"""
