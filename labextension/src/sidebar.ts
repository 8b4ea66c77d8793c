/**
 * The "Clusters" panel in the left sidebar (id `nbcluster-sidebar`): every
 * cluster on this machine, refreshed live. Polls the server (with backoff
 * after errors, paused while the panel is hidden); when the server is gone it
 * stops polling and says so once.
 */

import { Poll } from '@lumino/polling';
import { Widget } from '@lumino/widgets';
import { ServerConnection } from '@jupyterlab/services';

import { Actions } from './actions';
import { ClusterCard } from './card';
import { el } from './format';
import { requestAPI } from './request';
import { ICluster, IClusterList, IEvents } from './types';

const GIVE_UP_AFTER = 3; // consecutive network errors before the panel stops polling
const LATE = 10; // seconds of events asked for again at each refresh (they may arrive late)

export interface ISidebarOptions {
  actions: (sidebar: ClusterSidebar) => Actions;
  interval: number; // seconds between refreshes
  idleAfter: number; // seconds without work before a cluster counts as idle
}

export class ClusterSidebar extends Widget {
  readonly poll: Poll;
  private list: HTMLElement;
  private status: HTMLElement;
  private idleButton: HTMLButtonElement;
  private cards = new Map<string, ClusterCard>();
  private eventsSince = new Map<string, number>();
  private failures = 0;
  private actions: Actions;
  private idleAfter: number;
  clusters: ICluster[] = [];

  constructor(options: ISidebarOptions) {
    super();
    this.id = 'nbcluster-sidebar';
    this.addClass('nbc-sidebar');
    this.title.caption = 'Clusters';
    this.idleAfter = options.idleAfter;
    this.actions = options.actions(this);
    const toolbar = el('div', 'nbc-toolbar');
    const heading = el('span', 'nbc-heading', 'Clusters');
    const button = (action: string, label: string, tip: string, run: () => void) => {
      const b = el('button', `jp-Button nbc-button nbc-button-${action}`, label);
      b.dataset.action = action;
      b.title = tip;
      b.onclick = () => run();
      toolbar.append(b);
      return b;
    };
    toolbar.append(heading);
    button('new', 'New', 'Start a cluster on this machine', () => void this.actions.create());
    button('add-ray', 'Add Ray', 'Add a Ray cluster started elsewhere, by its address', () =>
      void this.actions.addRay()
    );
    this.idleButton = button('stop-idle', 'Idle', 'Find and stop clusters nobody used for long', () =>
      void this.actions.stopIdle(this.idle(), this.idleAfter)
    );
    button('refresh', '↻', 'Refresh now', () => void this.poll.refresh());
    this.status = el('div', 'nbc-status');
    this.list = el('div', 'nbc-list');
    this.node.append(toolbar, this.status, this.list);
    this.poll = new Poll({
      factory: () => this.refresh(),
      frequency: { interval: options.interval * 1000, backoff: true, max: 30_000 },
      standby: () => (this.isVisible ? 'when-hidden' : true),
      name: 'nbcluster:clusters'
    });
    this.poll.ticked.connect((_, tick) => {
      if (tick.phase === 'rejected') {
        this.failed(tick.payload);
      }
    });
  }

  /** Clusters idle for longer than the setting (the Idle button's list). */
  idle(): ICluster[] {
    return this.clusters.filter(
      c =>
        c.engine !== 'ray' && // not ours to stop
        c.summary &&
        !c.summary.running &&
        !c.summary.pending &&
        (c.idle_seconds ?? 0) >= this.idleAfter
    );
  }

  /** The New form. */
  create(): Promise<void> {
    return this.actions.create();
  }

  setSettings(interval: number, idleAfter: number): void {
    this.idleAfter = idleAfter;
    this.poll.frequency = { interval: interval * 1000, backoff: true, max: 30_000 };
  }

  async refresh(): Promise<void> {
    const data = await requestAPI<IClusterList>('clusters');
    this.failures = 0;
    this.clusters = data.clusters;
    this.render(data);
    await Promise.all(data.clusters.filter(c => c.summary).map(c => this.refreshEvents(c)));
  }

  protected onAfterShow(): void {
    void this.poll.refresh();
  }

  private async refreshEvents(c: ICluster): Promise<void> {
    const since = this.eventsSince.get(c.cluster_id);
    // Ask again for what ended a little before the last answer: other machines' events reach
    // the head about a second late, Ray's its dashboard; the stream drops the duplicates.
    const query = since === undefined ? '' : `?since=${since - LATE}`;
    try {
      const got = await requestAPI<IEvents>(`clusters/${c.cluster_id}/events${query}`);
      this.eventsSince.set(c.cluster_id, got.now);
      this.cards.get(c.cluster_id)?.events(got.events, got.now);
    } catch (error) {
      // stopped between the two requests: the next refresh drops its card
    }
  }

  private render(data: IClusterList): void {
    const seen = new Set<string>();
    const order: HTMLElement[] = [];
    for (const c of data.clusters) {
      seen.add(c.cluster_id);
      let card = this.cards.get(c.cluster_id);
      if (card) {
        card.idleAfter = this.idleAfter;
        card.update(c);
      } else {
        card = new ClusterCard(c, this.actions);
        card.idleAfter = this.idleAfter;
        card.update(c);
        this.cards.set(c.cluster_id, card);
      }
      order.push(card.node);
    }
    for (const id of [...this.cards.keys()]) {
      if (!seen.has(id)) {
        this.cards.get(id)!.node.remove();
        this.cards.delete(id);
        this.eventsSince.delete(id);
      }
    }
    // keep existing nodes in place (no flicker, clicks in flight land): append only what moved
    order.forEach((node, i) => {
      if (this.list.children[i] !== node) {
        this.list.insertBefore(node, this.list.children[i] ?? null);
      }
    });
    const idle = this.idle().length;
    this.idleButton.textContent = idle ? `Idle (${idle})` : 'Idle';
    this.idleButton.classList.toggle('nbc-has-idle', idle > 0);
    this.status.classList.remove('nbc-status-gone');
    this.status.textContent = data.clusters.length
      ? `${data.clusters.length} cluster${data.clusters.length > 1 ? 's' : ''} on this machine`
      : 'No cluster is running. Start one with New, %cluster start in a notebook, or nbcluster start --head; add a Ray cluster with Add Ray.';
  }

  private failed(error: unknown): void {
    const gone = error instanceof ServerConnection.NetworkError;
    this.failures = gone ? this.failures + 1 : 0;
    if (this.failures >= GIVE_UP_AFTER) {
      this.poll.dispose();
      this.status.classList.add('nbc-status-gone');
      this.status.textContent = 'The Jupyter server is not answering: the panel stopped refreshing. Reload the page to resume.';
      console.warn('nbcluster: the server is gone; the Clusters panel stopped polling.');
    } else if (!gone) {
      this.status.textContent = `Could not list clusters: ${(error as Error)?.message ?? error}`;
    }
  }
}
