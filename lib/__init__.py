"""thinkdistill's shared helpers: the notebooks narrate, `lib` does the work.

Usage: ``from lib import params; cfg = params.load_recipe("smollm2_135m")``
"""
