"""Mutation testing of Lucid's RMSprop against the conformance harness (``tox -e mutation``).

The mutation-testing tool is mutmut (``[tool.mutmut]`` in pyproject.toml); the
"test" it runs against each mutant is :mod:`mutation.test_check`, the
conformance ``check``'s deterministic probes on Lucid's RMSprop, so a mutant
counts as killed only when the harness catches it.  :mod:`mutation.kernel`
does the same for the numba-compiled kernel, which mutmut's trampolines cannot
reach, and :mod:`mutation.report` prints the score and the survivors.
"""
