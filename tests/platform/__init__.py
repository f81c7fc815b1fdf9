"""Static checks of what cannot run on a development machine: Jenkins, Docker, compose, k8s."""
