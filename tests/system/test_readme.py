import re

from tests.helpers import REPOSITORY


def test_ci_runs_exactly_the_readme_set_up_commands():
    readme = (REPOSITORY / "README.md").read_text()
    commands = re.findall(r"```bash\n(.+?)\n```", readme)[:2]
    ci = (REPOSITORY / ".ci" / "run").read_text().splitlines()
    assert len(commands) == 2 and all(command in ci for command in commands)
