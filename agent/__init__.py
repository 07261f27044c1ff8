"""GPU node agents: collectors, the simulated fleet, and the Kafka publisher."""
