"""Package definition of the fitness-centre Dagster code location. Every pin says why."""

from setuptools import find_packages, setup

setup(
    name="fitness_assets",
    version="0.1.0",
    description="Fitness Centre Medallion Data Platform: a Dagster asset graph on PySpark and Delta Lake",
    packages=find_packages(include=["fitness_assets", "fitness_assets.*"]),
    package_data={"fitness_assets": ["lakehouse/log4j2.properties", "transforms/java_zone_ids.txt"]},
    python_requires=">=3.11,<3.13",
    install_requires=[
        # The 1.13 line the platform was measured on (freshness policies, automation sensors);
        # the integrations below are released in lock-step with it (0.29.x <-> 1.13.x).
        "dagster==1.13.27",
        "dagster-webserver==1.13.27",
        # `dg`, Dagster's current CLI (dg check defs, dg dev, dg launch), same release line.
        "dagster-dg-cli==1.13.27",
        # delta-rs: the embedded Delta engine (merge, CDF, app transactions, constraints).
        "deltalake==1.6.6",
        # Kafka client; its librdkafka carries the mock cluster used in tests.
        "confluent-kafka==2.16.1",
        # deltalake needs pyarrow >= 21; 26 is the newest measured here.
        "pyarrow>=21,<27",
        # pyspark 4.1's Arrow conversions are tested against pandas 2; pandas 3 warns.
        "pandas>=2.2,<3",
    ],
    extras_require={
        # Spark for running anywhere but a Databricks cluster, whose runtime brings its own
        # (installing the wheel there must not replace it). Spark 4.1: what Databricks Runtime
        # 18.x runs; 4.3 warns with pandas 3. The connect extra brings the Spark Connect client
        # for the warm Spark that `fitness-assets live` and `spark-connect` start, and that
        # Databricks Connect speaks. `make install` installs it. dagster-pyspark (the Spark
        # resource's base) and dagster-databricks (Pipes, which needs it) require pyspark from
        # PyPI, so they come with it: the job cluster does without both (test_deployment.py).
        "local": [
            "pyspark[connect]==4.1.1",
            "dagster-pyspark==0.29.27",
            "dagster-databricks==0.29.27",
        ],
        "dev": [
            # Delta's Python API on Spark: the table-store contract tests run the spark-delta
            # store with it where Delta's jars are on the classpath (not here: no Maven).
            "delta-spark==4.4.1",
            # GitHub's workflow schema (vendored, no network) validates .github/workflows.
            "check-jsonschema==0.39.0",
            "pytest>=8,<10",
            "ruff>=0.6",
            # Yelp's maintained secrets scanner: `make test` fails on a committed credential.
            "detect-secrets==1.5.0",
        ],
    },
    entry_points={"console_scripts": ["fitness-assets=fitness_assets.cli:main"]},
)
