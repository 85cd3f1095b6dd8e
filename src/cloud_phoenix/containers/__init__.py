"""Docker for the project's own use on a host: a private engine that is always removed
(`engine`), and the image built from the repository's Dockerfile, online or offline (`image`).

Host tooling for tests and scripts: the application and the stack never import it.
`python -m cloud_phoenix.containers --help` is its command line.
"""
