"""Tokens of the tool definitions a client receives, with and without Code Mode.

Three MCP servers of 50 tools each (a code host, a database, an issue tracker), generated the
way such servers describe their tools: verb_resource names, one- or two-sentence descriptions,
JSON Schemas with typed, described, partly required parameters, enums, pagination and
defaults. The gateway names them `<server>__<tool>`; Claude Code sends each one to the model
as a Messages API tool `mcp__<gateway>__<server>__<tool>` with its `input_schema`, on every
request. With Code Mode the same servers are three meta-tools (proxy/mcp/codemode.py).

Tokens are counted with the mock provider's tokenizer (proxy/providers/mock.py:
`prompt_tokens`, 4 characters per token) over the request's `tools` array as JSON. Its
count_tokens counts only system and message text, so the array is handed to it as text.

    .venv/bin/python benchmarks/mcp_tokens.py [--json FILE]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from proxy.mcp.codemode import CodeMode, get_tool, search_tools  # noqa: E402
from proxy.providers.mock import prompt_tokens  # noqa: E402

CLIENT_SERVER_NAME = "gateway"  # `claude mcp add --transport http gateway …/mcp`
TARGET_REDUCTION = 0.5

Schema = dict[str, Any]


def string(description: str, **extra: Any) -> Schema:
    return {"type": "string", "description": description, **extra}


def integer(description: str, **extra: Any) -> Schema:
    return {"type": "integer", "description": description, **extra}


def boolean(description: str) -> Schema:
    return {"type": "boolean", "description": description}


def strings(description: str) -> Schema:
    return {"type": "array", "items": {"type": "string"}, "description": description}


@dataclass(frozen=True)
class Resource:
    singular: str
    plural: str
    about: str  # what one is, for descriptions
    key: str  # its identifying parameter
    key_schema: Schema
    fields: dict[str, Schema]  # writable fields
    required: tuple[str, ...]  # required when creating
    states: tuple[str, ...] = ()


@dataclass(frozen=True)
class Server:
    name: str
    scope: dict[str, Schema]  # parameters every tool takes (owner + repo, database, project)
    where: str  # "a GitHub repository"
    resources: list[Resource] = field(default_factory=list)


def github() -> Server:
    def resource(singular: str, plural: str, about: str, fields: dict[str, Schema]) -> Resource:
        return Resource(
            singular,
            plural,
            about,
            f"{singular}_number" if singular in ("issue", "pull_request") else f"{singular}_id",
            integer(f"The number that identifies the {singular.replace('_', ' ')}"),
            fields,
            tuple(list(fields)[:1]),
            ("open", "closed", "all"),
        )

    body = string("The body text, in GitHub-flavoured Markdown")
    return Server(
        "github",
        {
            "owner": string("Repository owner: a user or organization login"),
            "repo": string("Repository name, without the owner"),
        },
        "a GitHub repository",
        [
            resource(
                "issue",
                "issues",
                "an issue with its title, body, labels, assignees and milestone",
                {
                    "title": string("Issue title"),
                    "body": body,
                    "labels": strings("Label names to set"),
                    "assignees": strings("Logins to assign"),
                    "milestone": integer("Milestone number"),
                },
            ),
            resource(
                "pull_request",
                "pull_requests",
                "a pull request with its head and base branches, review state and checks",
                {
                    "title": string("Pull request title"),
                    "head": string("The branch that holds the changes"),
                    "base": string("The branch to merge into"),
                    "body": body,
                    "draft": boolean("Open it as a draft"),
                },
            ),
            resource(
                "issue_comment",
                "issue_comments",
                "a comment on an issue or pull request",
                {"body": body, "issue_number": integer("The issue or pull request number")},
            ),
            resource(
                "review",
                "reviews",
                "a pull request review with its verdict and comments",
                {
                    "event": string("The verdict", enum=["APPROVE", "REQUEST_CHANGES", "COMMENT"]),
                    "body": body,
                    "commit_id": string("SHA of the commit reviewed"),
                },
            ),
            resource(
                "branch",
                "branches",
                "a branch with its head commit and protection",
                {"name": string("Branch name"), "from_sha": string("SHA to branch from")},
            ),
            resource(
                "release",
                "releases",
                "a release with its tag, notes and assets",
                {
                    "tag_name": string("The tag to release"),
                    "name": string("Release title"),
                    "body": body,
                    "prerelease": boolean("Mark as a pre-release"),
                },
            ),
            resource(
                "label",
                "labels",
                "a label with its colour and description",
                {
                    "name": string("Label name"),
                    "color": string("Hex colour without #", pattern="^[0-9a-fA-F]{6}$"),
                    "description": string("What the label means"),
                },
            ),
            resource(
                "milestone",
                "milestones",
                "a milestone with its due date and progress",
                {
                    "title": string("Milestone title"),
                    "due_on": string("Due date", format="date-time"),
                    "description": string("What the milestone covers"),
                },
            ),
            resource(
                "workflow_run",
                "workflow_runs",
                "a GitHub Actions workflow run with its jobs, status and conclusion",
                {
                    "workflow_id": string("Workflow file name or id"),
                    "ref": string("Branch or tag to run on"),
                    "inputs": {"type": "object", "description": "Workflow inputs"},
                },
            ),
            resource(
                "webhook",
                "webhooks",
                "a repository webhook with its events and delivery settings",
                {
                    "url": string("Payload URL", format="uri"),
                    "events": strings("Events that trigger it"),
                    "active": boolean("Deliver events"),
                },
            ),
        ],
    )


def postgres() -> Server:
    def resource(singular: str, plural: str, about: str, fields: dict[str, Schema]) -> Resource:
        return Resource(
            singular,
            plural,
            about,
            f"{singular}_name",
            string(f"Name of the {singular.replace('_', ' ')}"),
            fields,
            tuple(list(fields)[:2]),
        )

    return Server(
        "postgres",
        {
            "database": string("Database to connect to, as configured on the server"),
            "schema": string("Schema to work in", default="public"),
        },
        "a PostgreSQL database",
        [
            resource(
                "table",
                "tables",
                "a table with its columns, constraints and size",
                {
                    "columns": {
                        "type": "array",
                        "description": "Column definitions",
                        "items": {
                            "type": "object",
                            "properties": {
                                "name": string("Column name"),
                                "type": string("SQL type, e.g. text or bigint"),
                                "nullable": boolean("Allow NULL"),
                            },
                            "required": ["name", "type"],
                        },
                    },
                    "if_not_exists": boolean("Skip when it exists"),
                },
            ),
            resource(
                "index",
                "indexes",
                "an index with its columns, method and size",
                {
                    "table": string("Table to index"),
                    "columns": strings("Columns, in order"),
                    "method": string("Index method", enum=["btree", "hash", "gin", "gist", "brin"]),
                    "unique": boolean("Enforce uniqueness"),
                    "concurrently": boolean("Build without locking writes"),
                },
            ),
            resource(
                "view",
                "views",
                "a view with its defining query",
                {"query": string("The SELECT that defines it"), "materialized": boolean("Store")},
            ),
            resource(
                "role",
                "roles",
                "a role with its attributes and memberships",
                {
                    "login": boolean("May log in"),
                    "password": string("Password for login roles"),
                    "member_of": strings("Roles it inherits"),
                },
            ),
            resource(
                "grant",
                "grants",
                "a privilege granted to a role on an object",
                {
                    "role": string("Role that receives it"),
                    "privileges": strings("e.g. SELECT, INSERT"),
                    "object": string("Table, view or schema"),
                },
            ),
            resource(
                "extension",
                "extensions",
                "an installed extension with its version",
                {"version": string("Version to install"), "cascade": boolean("Install needs")},
            ),
            resource(
                "function",
                "functions",
                "a stored function with its arguments, language and body",
                {
                    "arguments": string("Argument list, e.g. a int, b int"),
                    "returns": string("Return type"),
                    "language": string("Language", enum=["sql", "plpgsql"]),
                    "body": string("Function body"),
                },
            ),
            resource(
                "trigger",
                "triggers",
                "a trigger with its table, timing, events and function",
                {
                    "table": string("Table it fires on"),
                    "timing": string("When", enum=["BEFORE", "AFTER", "INSTEAD OF"]),
                    "events": strings("INSERT, UPDATE, DELETE, TRUNCATE"),
                    "function": string("Function it runs"),
                },
            ),
            resource(
                "publication",
                "publications",
                "a logical replication publication and its tables",
                {"tables": strings("Tables to publish"), "all_tables": boolean("Every table")},
            ),
            resource(
                "saved_query",
                "saved_queries",
                "a saved SQL query with its parameters and last run",
                {
                    "sql": string("The SQL text, with $1-style parameters"),
                    "parameters": {"type": "array", "description": "Parameter values"},
                    "read_only": boolean("Run in a read-only transaction"),
                    "timeout_ms": integer("Statement timeout", minimum=1, maximum=600000),
                },
            ),
        ],
    )


def jira() -> Server:
    def resource(singular: str, plural: str, about: str, fields: dict[str, Schema]) -> Resource:
        return Resource(
            singular,
            plural,
            about,
            f"{singular}_id",
            string(f"ID or key of the {singular.replace('_', ' ')}"),
            fields,
            tuple(list(fields)[:1]),
            ("active", "archived"),
        )

    return Server(
        "jira",
        {"project_key": string("Project key, e.g. OPS")},
        "a Jira project",
        [
            resource(
                "issue",
                "issues",
                "an issue with its summary, type, status, priority, assignee and fields",
                {
                    "summary": string("One-line summary"),
                    "issue_type": string("Type", enum=["Bug", "Task", "Story", "Epic"]),
                    "description": string("Description in Atlassian Document Format or text"),
                    "priority": string("Priority", enum=["Highest", "High", "Medium", "Low"]),
                    "assignee": string("Account ID of the assignee"),
                    "labels": strings("Labels"),
                },
            ),
            resource(
                "comment",
                "comments",
                "a comment on an issue with its visibility",
                {"issue_key": string("Issue it belongs to"), "body": string("Comment text")},
            ),
            resource(
                "sprint",
                "sprints",
                "a sprint with its dates, goal and issues",
                {
                    "name": string("Sprint name"),
                    "start_date": string("Start", format="date-time"),
                    "end_date": string("End", format="date-time"),
                    "goal": string("Sprint goal"),
                },
            ),
            resource(
                "board",
                "boards",
                "a Scrum or Kanban board with its filter and columns",
                {"name": string("Board name"), "type": string("Kind", enum=["scrum", "kanban"])},
            ),
            resource(
                "version",
                "versions",
                "a fix version with its release date and status",
                {
                    "name": string("Version name"),
                    "release_date": string("Release date", format="date"),
                    "released": boolean("Already released"),
                },
            ),
            resource(
                "component",
                "components",
                "a component with its lead and default assignee",
                {"name": string("Component name"), "lead": string("Account ID of the lead")},
            ),
            resource(
                "worklog",
                "worklogs",
                "time logged against an issue",
                {
                    "issue_key": string("Issue the work was on"),
                    "time_spent": string("e.g. 3h 20m"),
                    "started": string("When the work started", format="date-time"),
                },
            ),
            resource(
                "attachment",
                "attachments",
                "a file attached to an issue",
                {"issue_key": string("Issue to attach to"), "filename": string("File name")},
            ),
            resource(
                "filter",
                "filters",
                "a saved JQL filter with its sharing",
                {"name": string("Filter name"), "jql": string("The JQL query")},
            ),
            resource(
                "issue_link",
                "issue_links",
                "a link between two issues, such as blocks or duplicates",
                {
                    "inward_issue": string("Issue the link points from"),
                    "outward_issue": string("Issue the link points to"),
                    "link_type": string("e.g. Blocks, Duplicate, Relates"),
                },
            ),
        ],
    )


def tools_of(server: Server) -> list[dict[str, Any]]:
    """The server's tools/list: five verbs on each of its ten resources."""
    tools = []
    for res in server.resources:
        for verb in ("list", "get", "create", "update", "delete"):
            description, properties, required = _verb(verb, res, server)
            scoped = [name for name, prop in server.scope.items() if "default" not in prop]
            schema: Schema = {
                "type": "object",
                "properties": {**server.scope, **properties},
                "required": [*scoped, *required],
                "additionalProperties": False,
                "$schema": "http://json-schema.org/draft-07/schema#",
            }
            name = f"{verb}_{res.plural if verb == 'list' else res.singular}"
            tools.append({"name": name, "description": description, "inputSchema": schema})
    return tools


def _verb(verb: str, res: Resource, server: Server) -> tuple[str, dict[str, Schema], list[str]]:
    thing = res.singular.replace("_", " ")
    key = {res.key: res.key_schema}
    if verb == "list":
        filters: dict[str, Schema] = {
            "page": integer("Page number of the results", minimum=1, default=1),
            "per_page": integer("Results per page", minimum=1, maximum=100, default=30),
            "sort": string("Sort field", enum=["created", "updated", "name"]),
            "direction": string("Sort direction", enum=["asc", "desc"], default="desc"),
        }
        if res.states:
            filters["state"] = string(f"Only {res.plural} in this state", enum=list(res.states))
        text = (
            f"List {res.plural.replace('_', ' ')} in {server.where}. Each item is {res.about}. "
            "Results are paginated; use page and per_page to walk them."
        )
        return text, filters, []
    if verb == "get":
        return f"Get one {thing} of {server.where}: {res.about}.", key, [res.key]
    if verb == "create":
        text = f"Create a new {thing} in {server.where}. Returns the created {thing}."
        return text, dict(res.fields), list(res.required)
    if verb == "update":
        text = (
            f"Update an existing {thing} in {server.where}. Only the fields given are "
            f"changed; the others keep their values. Returns the updated {thing}."
        )
        return text, {**key, **res.fields}, [res.key]
    article = "an" if thing[0] in "aeiou" else "a"
    text = f"Delete {article} {thing} from {server.where}. This cannot be undone."
    return text, key, [res.key]


def messages_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Messages API `tools` array Claude Code builds from MCP tool definitions."""
    return [
        {
            "name": f"mcp__{CLIENT_SERVER_NAME}__{tool['name']}",
            "description": tool["description"],
            "input_schema": tool["inputSchema"],
        }
        for tool in tools
    ]


def tokens(value: Any) -> int:
    """The mock provider's count for this JSON, sent as the text of a request."""
    return prompt_tokens({"system": orjson.dumps(value).decode(), "messages": []})


def measure() -> dict[str, Any]:
    servers = [github(), postgres(), jira()]
    exposed = [
        {**tool, "name": f"{server.name}__{tool['name']}"}
        for server in servers
        for tool in tools_of(server)
    ]
    mode = CodeMode(exposed)
    direct = messages_tools(exposed)
    meta = messages_tools(mode.definitions())
    # What a model reads on top, once per task: one search and three signatures.
    search = search_tools(mode.stubs, "issue comment")
    signatures = [
        get_tool(mode.stubs, name)
        for name in ("github__get_issue", "jira__create_comment", "postgres__list_tables")
    ]
    direct_tokens, meta_tokens = tokens(direct), tokens(meta)
    return {
        "servers": {server.name: len(tools_of(server)) for server in servers},
        "tools": len(exposed),
        "direct_tokens": direct_tokens,
        "direct_bytes": len(orjson.dumps(direct)),
        "code_mode_tokens": meta_tokens,
        "code_mode_bytes": len(orjson.dumps(meta)),
        "reduction": 1 - meta_tokens / direct_tokens,
        "search_result_tokens": tokens(search),
        "three_signatures_tokens": tokens(signatures),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the figures here")
    options = parser.parse_args()
    figures = measure()
    servers = ", ".join(f"{name} ({count})" for name, count in figures["servers"].items())
    print(f"servers: {servers}: {figures['tools']} tools")
    print(
        f"without Code Mode: {figures['direct_tokens']:>7,} tokens "
        f"({figures['direct_bytes']:,} bytes of tool definitions, on every request)"
    )
    print(
        f"with Code Mode:    {figures['code_mode_tokens']:>7,} tokens "
        f"({figures['code_mode_bytes']:,} bytes: search_tools, get_tool, run_program)"
    )
    print(f"reduction:         {figures['reduction']:.1%} (target {TARGET_REDUCTION:.0%})")
    print(
        f"read on demand:    {figures['search_result_tokens']} tokens for one search_tools "
        f"answer, {figures['three_signatures_tokens']} for three get_tool answers"
    )
    if options.json:
        options.json.write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2))
    return 0 if figures["reduction"] >= TARGET_REDUCTION else 1


if __name__ == "__main__":
    sys.exit(main())
