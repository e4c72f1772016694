"""The Streamlit annotation app. Pages read state, call one function of ours, render."""
