"""Reports: figures and the tables that rebuild the paper's results."""
