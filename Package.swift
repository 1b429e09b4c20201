// swift-tools-version:6.0
// Fabric: runs container workloads on the cheapest place that fits them.
import PackageDescription

let package = Package(
    name: "Fabric",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "weaver", targets: ["weaver"]),
        .executable(name: "shuttle", targets: ["shuttle"]),
        .executable(name: "fabric-monitor", targets: ["fabric-monitor"]),
        .executable(name: "fabric-sim", targets: ["fabric-sim"]),
    ],
    targets: [
        // C system libraries (Debian -dev packages) and tiny shims for variadic C calls.
        .systemLibrary(name: "CSQLite", path: "Sources/CSQLite", pkgConfig: "sqlite3"),
        .systemLibrary(name: "CPostgres", path: "Sources/CPostgres", pkgConfig: "libpq"),
        .systemLibrary(name: "CYAML", path: "Sources/CYAML", pkgConfig: "yaml-0.1"),
        .systemLibrary(name: "CMicroHTTPD", path: "Sources/CMicroHTTPD", pkgConfig: "libmicrohttpd"),
        .systemLibrary(name: "CNATS", path: "Sources/CNATS"),
        .systemLibrary(name: "COpenSSL", path: "Sources/COpenSSL"),
        .systemLibrary(name: "CCurl", path: "Sources/CCurl", pkgConfig: "libcurl"),
        .target(name: "CShims", dependencies: ["CMicroHTTPD", "CSQLite"], path: "Sources/CShims"),

        // Pure cores: no I/O, no clock reads, no unseeded randomness.
        .target(name: "FabricCore"),
        .target(name: "FabricLog"),
        .target(name: "FabricScheduler", dependencies: ["FabricCore"]),

        // Shells.
        .target(name: "FabricStore", dependencies: ["FabricCore", "CSQLite", "CPostgres", "CShims"]),
        .target(name: "FabricHTTP", dependencies: ["FabricCore", "CMicroHTTPD", "CShims"]),
        .target(name: "FabricYAML", dependencies: ["CYAML"]),
        .target(name: "FabricProviders", dependencies: ["FabricCore", "FabricLog", "FabricYAML", "CCurl", "COpenSSL"]),
        .target(name: "FabricRuntime", dependencies: ["FabricCore"]),
        .target(name: "FabricActors", dependencies: ["FabricCore", "FabricLog", "CNATS"]),

        // Composition.
        .target(name: "Shuttle", dependencies: ["FabricCore", "FabricRuntime", "FabricLog", "FabricActors"]),
        .target(
            name: "Weaver",
            dependencies: [
                "FabricCore", "FabricScheduler", "FabricStore", "FabricHTTP", "FabricProviders", "FabricRuntime",
                "Shuttle", "FabricLog", "FabricActors", "FabricYAML",
            ]),

        // The deterministic fleet simulator: production cores with the seams (clock, randomness, IDs, providers,
        // node runtimes) replaced; `fabric-sim` is its thin executable.
        .target(
            name: "FabricSimulation",
            dependencies: [
                "FabricCore", "FabricScheduler", "FabricProviders", "COpenSSL", "Weaver", "Shuttle", "FabricStore",
                "FabricActors", "FabricRuntime", "FabricLog",
            ],
            path: "Simulation/FabricSimulation"),

        // Thin executables.
        .executableTarget(name: "weaver", dependencies: ["Weaver"]),
        .executableTarget(name: "shuttle", dependencies: ["Shuttle", "Weaver"]),
        .executableTarget(name: "fabric-monitor", dependencies: []),
        .executableTarget(name: "fabric-sim", dependencies: ["FabricSimulation"], path: "Simulation/fabric-sim"),
        .executableTarget(
            name: "fabric-bench-http", dependencies: ["CMicroHTTPD", "CShims"], path: "Benchmarks/fabric-bench-http"),
        .executableTarget(
            name: "fabric-bench-scheduler", dependencies: ["FabricScheduler", "FabricProviders"],
            path: "Benchmarks/fabric-bench-scheduler"),
        .executableTarget(
            name: "fabric-bench-cost", dependencies: ["FabricScheduler", "FabricProviders"],
            path: "Benchmarks/fabric-bench-cost"),

        // Tests: one target per module; IntegrationTests start real servers and binaries.
        .testTarget(name: "FabricCoreTests", dependencies: ["FabricCore"]),
        .testTarget(name: "FabricSchedulerTests", dependencies: ["FabricScheduler", "FabricProviders"]),
        .testTarget(name: "FabricStoreTests", dependencies: ["FabricStore"]),
        .testTarget(name: "FabricHTTPTests", dependencies: ["FabricHTTP"]),
        .testTarget(name: "FabricRuntimeTests", dependencies: ["FabricRuntime"]),
        .testTarget(name: "FabricProvidersTests", dependencies: ["FabricProviders", "FabricHTTP", "FabricLog"]),
        .testTarget(name: "FabricActorsTests", dependencies: ["FabricActors"]),
        .testTarget(name: "ShuttleTests", dependencies: ["Shuttle"]),
        .testTarget(name: "WeaverTests", dependencies: ["Weaver"]),
        .testTarget(name: "SimulationTests", dependencies: ["FabricSimulation"]),
        .testTarget(name: "IntegrationTests", dependencies: ["Weaver"]),
    ]
)
