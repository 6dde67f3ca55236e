"""What keeps the platform fresh without a person: sensors on the sources, automation
conditions on the tables, freshness policies per layer."""
