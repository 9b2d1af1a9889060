"""Scene families and the workers that render them (2D numpy generators, Blender scenes)."""
