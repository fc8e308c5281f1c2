//! Tests of the agent's checks of policy offers and newer manifests.
