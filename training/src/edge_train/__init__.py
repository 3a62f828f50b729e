"""The training code that runs the same on a laptop, on the edge VM and inside an Azure ML job.

Self-contained: it needs azure-storage-blob, scikit-learn and tqdm, nothing of the rest of the
repository, because this folder is the code snapshot Azure ML uploads for the job.
"""
