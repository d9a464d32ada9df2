"""Node programs: each started as ``python -m mxlab.nodes ROLE --config node.json``."""
