"""TEE evidence: collection (configfs-tsm, sev-guest, NVIDIA SDK, none), the binding
document, and verifiers for AMD SEV-SNP, Intel TDX and NVIDIA H100 evidence with pinned
vendor roots and a policy.

Nothing here imports the node, the research loop or torch.
"""
