"""The nightly on this machine: the box built here (box) and libvirt in a namespace (virt)."""
