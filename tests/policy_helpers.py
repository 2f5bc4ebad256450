"""Shared builders of policy requests for the policy, tag, run and SDK tests."""

from __future__ import annotations

PROVIDER = "fc4d5750-22e7-4798-8a46-f48f62c4c1da"
WEB1 = "6507cb66-90dc-4a12-a573-c9f3398f899d"
DB1 = "1d4b4e0e-5d1f-4c4b-8d57-2f5a3a1b0002"
GONE = "4dab5e4c-8a2c-4d90-9c73-5e8d6d4e0005"
PATTERN = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nRRULE:FREQ=WEEKLY;BYDAY=TH;BYHOUR=12;BYMINUTE=27\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"


def body(name="c2c-policy", resources=(WEB1,), **op_def) -> dict:
    return {
        "policy": {
            "name": name,
            "description": "My plan",
            "provider_id": PROVIDER,
            "parameters": {"common": {}},
            "scheduled_operations": [{
                "name": "my-backup-policy",
                "description": "My backup policy",
                "enabled": True,
                "operation_definition": op_def or {"max_backups": 20, "permanent": False},
                "trigger": {"properties": {"pattern": PATTERN}},
                "operation_type": "backup",
            }],
            "resources": [{"id": r, "type": "OS::Nova::Server", "name": f"res-{i}"} for i, r in enumerate(resources)],
        }
    }


def create(client, headers, b=None, project="demo"):
    return client.post(f"/v1/{project}/policies", json=b or body(), headers=headers)
