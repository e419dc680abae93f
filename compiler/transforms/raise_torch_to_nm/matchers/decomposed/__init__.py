"""Pattern families for decomposed graphs: what torch-mlir's ONNX conversion and
torch.export's default decomposition table make of ViT layers (matmul + add linears,
native or arithmetic LayerNorm, erf / tanh GELU, attention around views of one qkv
tensor, convolution patch embeddings, index_select pooling). `views.py` reads chains of
data movement by the element map they compute, so any spelling of a view is accepted."""
