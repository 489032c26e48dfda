"""Embedding with published ONNX variants, and the request pipeline that chains the vision steps."""
