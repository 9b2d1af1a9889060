"""Experiment harnesses around otfgen, not part of its runtime. They may import the trainer, the
controller, blender_gen and the configs; nothing outside this package imports them (``otfgen
compare`` and the ``otfgen-compare`` entry point name ``compare`` only as a string).

- ``compare``: the ``otfgen-compare`` command; parses ``policies=[...] seeds= baseline=
  headroom= budgets= ...`` and runs every (arm, seed), or in a budget sweep every (arm, budget,
  seed), as an ordinary ``otfgen`` run, resumably;
- ``runs``: where one run lives on disk and what it recorded, read back;
- ``stats``: paired differences with t intervals, headroom shares, samples to an accuracy;
- ``scaling``: a budget sweep's law error(N) = a·N^(−b) + c per arm, its bootstrap over seeds,
  and the data-efficiency multiplier against the baseline;
- ``report``: ``results.md``, ``results.json`` and the plots;
- ``random_search``: the random-search baseline arm of a comparison;
- ``gym_env``: the decision "what to generate next" as a ``gymnasium.Env`` (extra ``gym``).
"""
