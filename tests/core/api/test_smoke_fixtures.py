from typing import Any


def test_it_answers_me_for_an_agent(agent_client: Any) -> None:
    response = agent_client.get("/api/v1/me")
    assert response.status_code == 200
    assert response.json() == {"kind": "agent", "name": agent_client.agent.name, "operator": False}


def test_it_answers_me_for_an_operator(operator_client: Any) -> None:
    response = operator_client.get("/api/v1/me")
    assert response.json()["operator"] is True
