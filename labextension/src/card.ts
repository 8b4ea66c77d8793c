/**
 * One cluster in the sidebar: what it is and who owns it, its numbers, a row
 * per node with CPU and memory bars and sparklines, the task stream, and the
 * actions. Test hooks (kept stable): `.nbc-cluster[data-cluster-id]`, buttons
 * `[data-action="connect" | "insert" | "stop" | "remove"]`. A Ray cluster added by
 * address (`engine: 'ray'`) has Remove (forget it) where ours have Stop: it is not
 * ours to stop. Its task stream shows the finished tasks its dashboard lists. Lanes are
 * labelled by node (`.nbc-taskstream-lane[data-node]`).
 */

import { MimeData } from '@lumino/coreutils';
import { Drag } from '@lumino/dragdrop';

import { bytes, bytesPair, duration, el, num } from './format';
import { History, Sparkline } from './sparkline';
import { TaskStream } from './taskstream';
import { ICluster, INode, ITaskEvent } from './types';

const CELL_MIME = 'application/vnd.jupyter.cells';
export const HISTORY = 60; // samples per sparkline (2 minutes at the default 2 s)

export interface ICardActions {
  connect(cluster: ICluster): void;
  insert(cluster: ICluster): void;
  stop(cluster: ICluster): void;
  remove(cluster: ICluster): void;
}

export class ClusterCard {
  readonly node: HTMLElement;
  cluster: ICluster;
  idleAfter = 3600; // seconds; set by the sidebar from the settings
  private title: HTMLElement;
  private owner: HTMLElement;
  private badges: HTMLElement;
  private stats: HTMLElement;
  private nodes: HTMLElement;
  private error: HTMLElement;
  private stream = new TaskStream(30);
  private history = new History(HISTORY);
  private charts = new Map<string, [Sparkline, Sparkline]>();
  private dragFrom: { x: number; y: number } | null = null;

  constructor(cluster: ICluster, actions: ICardActions) {
    this.cluster = cluster;
    this.node = el('div', 'nbc-cluster');
    this.node.dataset.clusterId = cluster.cluster_id;
    const header = el('div', 'nbc-cluster-header');
    header.title = 'Drag into a notebook to insert the code that connects to this cluster';
    this.title = el('span', 'nbc-cluster-address');
    this.badges = el('span', 'nbc-badges');
    header.append(el('span', 'nbc-dot'), this.title, this.badges);
    this.owner = el('div', 'nbc-owner');
    this.error = el('div', 'nbc-error');
    this.stats = el('div', 'nbc-stats');
    this.nodes = el('div', 'nbc-nodes');
    const buttons = el('div', 'nbc-actions');
    const button = (action: string, label: string, tip: string, run: () => void) => {
      const b = el('button', `jp-Button nbc-button nbc-button-${action}`, label);
      b.dataset.action = action;
      b.title = tip;
      b.onclick = () => run();
      buttons.append(b);
    };
    button('connect', 'Connect', 'The active notebook’s kernel connects to this cluster', () =>
      actions.connect(this.cluster)
    );
    button('insert', 'Insert', 'Insert a cell with the code that connects to this cluster', () =>
      actions.insert(this.cluster)
    );
    const ray = cluster.engine === 'ray';
    this.node.dataset.engine = cluster.engine;
    if (ray) {
      button('remove', 'Remove', 'Take this Ray cluster off the list; it keeps running', () =>
        actions.remove(this.cluster)
      );
    } else {
      button('stop', 'Stop', 'Stop this cluster and every process of it', () =>
        actions.stop(this.cluster)
      );
    }
    this.node.append(header, this.owner, this.error, this.stats, this.nodes, this.stream.node, buttons);
    header.addEventListener('mousedown', this.onMouseDown);
    this.update(cluster);
  }

  /** Show a new snapshot of the cluster. */
  update(cluster: ICluster): void {
    this.cluster = cluster;
    this.title.textContent = cluster.head_address;
    this.owner.replaceChildren(...ownerText(cluster));
    const s = cluster.summary;
    const idle = cluster.idle_seconds ?? 0;
    this.node.classList.toggle('nbc-unreachable', !!cluster.error);
    const isIdle = !!s && !s.running && !s.pending && idle >= this.idleAfter;
    this.node.classList.toggle('nbc-idle', isIdle);
    this.node.classList.toggle('nbc-busy', !!s && s.running > 0);
    this.node.dataset.idleSeconds = `${Math.floor(idle)}`;
    this.badges.replaceChildren(
      ...(cluster.owner.kind === 'kernel' ? [badge('notebook', 'owned by a notebook kernel')] : []),
      ...(cluster.engine === 'ray' ? [badge('Ray', 'a Ray cluster added by address', 'nbc-badge-ray')] : []),
      ...(isIdle ? [badge(`idle ${duration(idle)}`, 'no task for a long time', 'nbc-badge-idle')] : [])
    );
    this.error.textContent = cluster.error
      ? cluster.error.startsWith('unreachable') ? cluster.error : `not answering: ${cluster.error}`
      : '';
    if (!s || !cluster.snapshot) {
      this.stats.replaceChildren();
      return;
    }
    const stat = (key: string, label: string, value: string, data: number, tip = '') => {
      const box = el('div', `nbc-stat nbc-stat-${key}`);
      box.dataset.value = `${data}`;
      if (tip) {
        box.title = tip;
      }
      box.append(el('span', 'nbc-stat-label', label), el('span', 'nbc-stat-value', value));
      return box;
    };
    const items = [
      stat('nodes', 'Nodes', `${s.nodes}${s.nodes_dead ? ` (+${s.nodes_dead} dead)` : ''}`, s.nodes),
      stat('cpus', 'CPUs', `${num(s.cpus_used)}/${num(s.cpus_total)}`, s.cpus_used, 'CPUs held by tasks and actors / offered'),
      stat('cpu-load', 'CPU load', `${s.cpu_percent.toFixed(0)}%`, s.cpu_percent, 'mean CPU use of the nodes’ machines'),
      stat('memory', 'Memory', bytesPair(s.memory_used, s.memory_total), s.memory_used, 'used / total on the nodes’ machines'),
      stat('tasks', 'Tasks', `${s.running} running, ${s.pending} pending${s.infeasible ? `, ${s.infeasible} infeasible` : ''}`, s.running),
      stat('actors', 'Actors', `${s.actors}`, s.actors),
      stat('objects', 'Object store', bytesPair(s.object_store_used, s.object_store_capacity), s.object_store_used),
      stat('idle', 'Idle', s.running || s.pending ? 'busy' : duration(idle), idle)
    ];
    if (s.gpus_total) {
      items.splice(3, 0, stat('gpus', 'GPUs', `${num(s.gpus_used)}/${num(s.gpus_total)}`, s.gpus_used));
    }
    for (const [name, [used, total]] of Object.entries(s.custom)) {
      items.push(stat(`res-${name}`, name, `${num(used)}/${num(total)}`, used, 'custom resource: used / total'));
    }
    this.stats.replaceChildren(...items);
    this.drawNodes(cluster.snapshot.nodes);
  }

  /** Add task events and redraw the task stream at the server's time `now`. */
  events(events: ITaskEvent[], now: number): void {
    this.stream.add(events);
    this.stream.draw(now);
  }

  private drawNodes(nodes: INode[]): void {
    const rows: HTMLElement[] = [];
    for (const n of nodes) {
      const cpu = this.history.push(`${n.node_id}:cpu`, n.cpu_percent);
      const mem = this.history.push(`${n.node_id}:mem`, n.memory_total ? (100 * n.memory_used) / n.memory_total : 0);
      let charts = this.charts.get(n.node_id);
      if (!charts) {
        charts = [new Sparkline('nbc-spark-cpu', `CPU of node ${n.node_id}`), new Sparkline('nbc-spark-mem', `memory of node ${n.node_id}`)];
        this.charts.set(n.node_id, charts);
      }
      charts[0].draw(cpu, 100, HISTORY);
      charts[1].draw(mem, 100, HISTORY);
      const row = el('div', `nbc-node${n.alive ? '' : ' nbc-node-dead'}`);
      row.dataset.nodeId = n.node_id;
      const name = el('div', 'nbc-node-name', `${n.node_id} ${n.ip}${n.alive ? '' : ' (dead)'}`);
      name.title = `${n.hostname}: ${n.workers_busy} busy and ${n.workers_idle} idle workers`;
      row.append(
        name,
        meter('CPU', n.cpu_percent, `${n.cpu_percent.toFixed(0)}%`, charts[0]),
        meter('Mem', mem[mem.length - 1], bytes(n.memory_used), charts[1])
      );
      rows.push(row);
    }
    this.history.forget(key => nodes.some(n => key.startsWith(`${n.node_id}:`)));
    this.nodes.replaceChildren(...rows);
  }

  private onMouseDown = (event: MouseEvent): void => {
    if (event.button !== 0) {
      return;
    }
    this.dragFrom = { x: event.clientX, y: event.clientY };
    document.addEventListener('mousemove', this.onMouseMove);
    document.addEventListener('mouseup', this.onMouseUp, { once: true });
  };

  private onMouseUp = (): void => {
    this.dragFrom = null;
    document.removeEventListener('mousemove', this.onMouseMove);
  };

  private onMouseMove = (event: MouseEvent): void => {
    const from = this.dragFrom;
    if (!from || Math.abs(event.clientX - from.x) + Math.abs(event.clientY - from.y) < 5) {
      return;
    }
    this.onMouseUp();
    const code = this.cluster.connect_code;
    const mime = new MimeData();
    mime.setData('text/plain', code);
    mime.setData(CELL_MIME, [{ cell_type: 'code', source: code, metadata: {} }]);
    const image = el('div', 'nbc-drag-image', code.split('\n').pop());
    const drag = new Drag({ mimeData: mime, dragImage: image, proposedAction: 'copy', supportedActions: 'copy', source: this });
    void drag.start(event.clientX, event.clientY);
  };
}

function badge(text: string, tip: string, extra = ''): HTMLElement {
  const b = el('span', `nbc-badge ${extra}`, text);
  b.title = tip;
  return b;
}

function ownerText(c: ICluster): Node[] {
  const o = c.owner;
  if (o.kind === 'kernel') {
    const path = el('span', 'nbc-owner-path', o.path || o.kernel_id || '');
    return [document.createTextNode('%cluster start in '), path, document.createTextNode(' (stops with its kernel)')];
  }
  if (o.kind === 'ray') {
    const parts: Node[] = [document.createTextNode('Ray cluster added by address (runs until its owner stops it)')];
    if (c.dashboard) {
      const link = el('a', 'nbc-dashboard-link', 'dashboard');
      link.href = c.dashboard;
      link.target = '_blank';
      link.rel = 'noopener';
      parts.push(document.createTextNode(' · '), link);
    }
    return parts;
  }
  if (o.kind === 'process') {
    return [document.createTextNode(`owned by pid ${o.pid}${o.name ? `: ${o.name}` : ''}`)];
  }
  return [document.createTextNode('nbcluster start --head (runs until stopped)')];
}

/** A label, the sparkline of the last minutes (its right end is now) and the current value. */
function meter(label: string, percent: number, text: string, chart: Sparkline): HTMLElement {
  const box = el('div', `nbc-meter nbc-meter-${label.toLowerCase()}`);
  box.dataset.percent = percent.toFixed(1);
  box.append(el('span', 'nbc-meter-label', label), chart.node, el('span', 'nbc-meter-value', text));
  return box;
}
