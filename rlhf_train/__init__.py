"""Generation, export, training and the `rlhf` CLI. Knows no Streamlit."""
