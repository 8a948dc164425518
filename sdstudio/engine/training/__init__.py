"""Training networks on the user's images, Qt-free, run from ``sdstudio-cli train``.

The pieces every kind of training shares: :mod:`.datasets` (kohya-style folders,
captions, buckets), :mod:`.data` (batches and per-step draws), :mod:`.loop` (optimizer,
schedule, saving, cancel), :mod:`.checkpoints` (resumable states), :mod:`.events`
(what a run reports). One trainer per kind of network: :mod:`.lora_trainer` now;
embeddings, DreamBooth and hypernetworks plug into the same loop as :class:`.loop.Trainer`
implementations.
"""
