"""The notebooks' own helpers: plots, diagrams, the playground widget, Colab, the checked exercises.

Only the course notebooks use this subpackage; nothing in the library imports it (tests/test_layout.py).
A notebook's sizes (how many steps, how many batches) are plain assignments in its `parameters` cell.
"""
