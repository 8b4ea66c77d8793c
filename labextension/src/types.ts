/** What the server sends: see kernel_ext/lab/registry.py (`Registry.describe`). */

export interface IOwner {
  kind: 'kernel' | 'process' | 'detached' | 'ray';
  pid: number;
  kernel_id?: string;
  kernel_name?: string;
  path?: string;
  name?: string;
}

export interface IActor {
  actor_id: string;
  class_name: string;
  name: string;
  state: string;
  pid: number;
  pending_calls: number;
}

export interface INode {
  node_id: string;
  ip: string;
  hostname: string;
  alive: boolean;
  resources_total: Record<string, number>;
  resources_available: Record<string, number>;
  cpu_percent: number;
  memory_total: number;
  memory_used: number;
  object_store_used: number;
  object_store_capacity: number;
  workers_busy: number;
  workers_idle: number;
  running: Record<string, number>;
  pending: Record<string, number>;
  actors: IActor[];
}

export interface ISummary {
  nodes: number;
  nodes_dead: number;
  cpus_used: number;
  cpus_total: number;
  cpu_percent: number;
  gpus_used: number;
  gpus_total: number;
  memory_used: number;
  memory_total: number;
  memory_reserved: number;
  custom: Record<string, [number, number]>;
  running: number;
  pending: number;
  infeasible: number;
  actors: number;
  object_store_used: number;
  object_store_capacity: number;
  tasks_finished: number;
  workers_busy: number;
  workers_idle: number;
}

export interface ICluster {
  cluster_id: string;
  head_address: string;
  started_at: number;
  embedded: boolean;
  role: string;
  owner: IOwner;
  connect_code: string;
  engine: string; // 'nbcluster', or 'ray' for a Ray cluster added by address
  dashboard?: string; // a Ray cluster's dashboard
  error: string;
  snapshot: { nodes: INode[]; taken_at: number } | null;
  summary: ISummary | null;
  idle_seconds: number | null;
}

export interface IClusterList {
  clusters: ICluster[];
  now: number;
}

export interface ITaskEvent {
  name: string;
  start: number;
  end: number;
  ok: boolean;
  kind: string;
  node: string;
  host?: string; // the node's machine (absent from older servers)
  worker: number;
}

export interface IEvents {
  now: number;
  events: ITaskEvent[];
}
