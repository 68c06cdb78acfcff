"""The operator dialplan language: YAML numbers, flows and prompts, loaded into frozen values
(``model``, ``loader``, ``validate``) and interpreted per call (``engine``)."""
