"""A candidate module whose own import fails on a dependency that is not installed (the candidate's failure)."""

import no_such_dependency_of_the_candidate  # noqa: F401
