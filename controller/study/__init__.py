"""Experiment harnesses around otfgen, not part of its runtime. They may import the trainer, the
controller, blender_gen and the configs; nothing outside this package imports them (``otfgen
compare`` and the ``otfgen-compare`` entry point name ``compare`` only as a string).

- ``compare``: the ``otfgen-compare`` command: several arms over the same seeds, paired;
- ``random_search``: the random-search baseline arm of a comparison;
- ``gym_env``: the decision "what to generate next" as a ``gymnasium.Env`` (extra ``gym``).
"""
