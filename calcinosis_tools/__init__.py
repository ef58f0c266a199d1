"""Sandbox and review tooling of a source checkout: not part of the installed service.

    scripts/calcinosis-tools sandbox load --fhir-server URL [--patients DIR] [--token T] [--no-shift]
    scripts/calcinosis-tools knowledge-diff OLD NEW [--scenarios PATH ...]

(`python -m calcinosis_tools ...` from the repository root does the same.) These commands work
on the repository itself: the sandbox patients in deploy/fhir-sandbox/patients, the knowledge base
at git revisions. They are therefore kept out of the runtime packages (`calcinosis`, `fhir_mapping`,
`hooks`), so the wheel and the container image carry only what the service runs, and every
command `calcinosis-cds --help` lists works from an installed wheel and inside the image.
"""
