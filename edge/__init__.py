"""What runs on the edge VMs: the first-boot script, its cloud-init rendering, Kubernetes manifests."""
