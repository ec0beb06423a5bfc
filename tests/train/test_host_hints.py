"""The hints a run prints for settings only the user can make (before Python starts)."""

from bitune_jax.train.host_hints import environment_hints

GLIBC = ("glibc", "2.36")


def test_a_cpu_run_on_recent_glibc_without_huge_pages_is_told_how_to_set_them():
    (line,) = environment_hints("cpu", "Linux", GLIBC, {})
    assert "GLIBC_TUNABLES=glibc.malloc.hugetlb=1" in line and "before Python starts" in line
    (kept,) = environment_hints("cpu", "Linux", GLIBC, {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert "GLIBC_TUNABLES=glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1" in kept  # the user's tunables kept


def test_no_hint_where_it_would_not_help_or_is_already_set():
    assert environment_hints("cpu", "Linux", GLIBC, {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}) == []
    assert environment_hints("gpu", "Linux", GLIBC, {}) == []  # device buffers are not malloc'd
    assert environment_hints("cpu", "Darwin", ("", ""), {}) == []
    assert environment_hints("cpu", "Linux", ("glibc", "2.31"), {}) == []  # no hugetlb tunable before 2.35
    assert environment_hints("cpu", "Linux", ("musl", "1.2"), {}) == []
