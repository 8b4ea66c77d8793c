/**
 * What the buttons do: connect the active notebook's kernel, insert the
 * connecting cell, stop (asking first when a kernel owns the cluster or it is
 * working), start a new cluster from a form, stop the clusters idle for long,
 * add a Ray cluster by address and remove (forget) one: never stop it.
 */

import { Dialog, Notification, showDialog } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookActions } from '@jupyterlab/notebook';
import { KernelMessage } from '@jupyterlab/services';
import { Widget } from '@lumino/widgets';

import { duration } from './format';
import { NewClusterForm } from './newform';
import { IRayInfo, RayClusterForm } from './rayform';
import { requestAPI } from './request';
import { ICluster } from './types';

export class Actions {
  constructor(
    private tracker: INotebookTracker | null,
    private changed: () => void
  ) {}

  /** The active notebook's kernel runs the cluster's connect code. */
  async connect(cluster: ICluster): Promise<void> {
    const panel = this.tracker?.currentWidget;
    if (!panel) {
      Notification.warning('Open a notebook first: Connect runs the code in its kernel.', { autoClose: 5000 });
      return;
    }
    await panel.sessionContext.ready;
    const kernel = panel.sessionContext.session?.kernel;
    if (!kernel) {
      Notification.warning(`${panel.title.label} has no kernel to connect.`, { autoClose: 5000 });
      return;
    }
    const future = kernel.requestExecute({ code: cluster.connect_code, store_history: false });
    let said = '';
    future.onIOPub = msg => {
      if (KernelMessage.isStreamMsg(msg)) {
        said += msg.content.text;
      } else if (KernelMessage.isErrorMsg(msg)) {
        said += `${msg.content.ename}: ${msg.content.evalue}\n`;
      }
    };
    const reply = await future.done;
    if (reply.content.status !== 'ok' || said.trim()) {
      Notification.warning(`${panel.title.label}: ${said.trim() || reply.content.status}`, { autoClose: 8000 });
    } else {
      Notification.success(`${panel.title.label} is connected to ${cluster.head_address}.`, { autoClose: 4000 });
    }
  }

  /** A new cell below the active one, with the connect code. */
  insert(cluster: ICluster): void {
    const panel = this.tracker?.currentWidget;
    if (!panel) {
      Notification.warning('Open a notebook first: Insert adds a cell to it.', { autoClose: 5000 });
      return;
    }
    const notebook = panel.content;
    if (notebook.activeCell) {
      NotebookActions.insertBelow(notebook);
    } else {
      NotebookActions.insertAbove(notebook);
    }
    notebook.activeCell?.model.sharedModel.setSource(cluster.connect_code);
  }

  /** Stop, after asking when a kernel owns the cluster or tasks are running. */
  async stop(cluster: ICluster): Promise<void> {
    const reasons: string[] = [];
    if (cluster.owner.kind === 'kernel') {
      reasons.push(`it was started by the kernel of ${cluster.owner.path || 'a notebook'}`);
    } else if (cluster.owner.kind === 'process') {
      reasons.push(`it belongs to process ${cluster.owner.pid}`);
    }
    const s = cluster.summary;
    if (s && (s.running || s.pending || s.actors)) {
      reasons.push(`it has ${s.running} running and ${s.pending} pending tasks and ${s.actors} actors`);
    }
    if (reasons.length) {
      const answer = await showDialog({
        title: `Stop the cluster at ${cluster.head_address}?`,
        body: `${reasons.join('; ')}. Its work is lost and the kernels using it are disconnected.`,
        buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Stop' })]
      });
      if (!answer.button.accept) {
        return;
      }
    }
    await this.stopQuietly([cluster]);
  }

  /** Ask for the size of a new cluster, then start it. */
  async create(): Promise<void> {
    const form = new NewClusterForm();
    const answer = await showDialog({
      title: 'New cluster',
      body: form,
      buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Start' })],
      focusNodeSelector: 'input'
    });
    if (!answer.button.accept) {
      return;
    }
    let request;
    try {
      request = form.getValue();
    } catch (error) {
      Notification.error(`${error}`, { autoClose: 8000 });
      return;
    }
    try {
      const made = await requestAPI<ICluster>('clusters', { method: 'POST', body: JSON.stringify(request) });
      Notification.success(`Started a cluster at ${made.head_address}.`, { autoClose: 4000 });
    } catch (error) {
      Notification.error(`Could not start a cluster: ${(error as Error).message}`, { autoClose: 8000 });
    }
    this.changed();
  }

  /** Ask for a Ray cluster's address (and token), then add it to the list. */
  async addRay(): Promise<void> {
    let info: IRayInfo;
    try {
      info = await requestAPI<IRayInfo>('ray');
    } catch (error) {
      Notification.error(`Could not ask the server about Ray: ${(error as Error).message}`, { autoClose: 8000 });
      return;
    }
    const form = new RayClusterForm(info);
    const answer = await showDialog({
      title: 'Add a Ray cluster',
      body: form,
      buttons: info.installed
        ? [Dialog.cancelButton(), Dialog.okButton({ label: 'Add' })]
        : [Dialog.okButton({ label: 'Close' })],
      focusNodeSelector: 'input'
    });
    if (!answer.button.accept || !info.installed) {
      return;
    }
    let request;
    try {
      request = form.getValue();
    } catch (error) {
      Notification.error(`${(error as Error).message}`, { autoClose: 8000 });
      return;
    }
    const id = Notification.emit(`Adding the Ray cluster at ${request.address}…`, 'in-progress', { autoClose: false });
    try {
      await requestAPI<ICluster>('ray', { method: 'POST', body: JSON.stringify(request) });
      Notification.update({ id, message: `Added the Ray cluster at ${request.address}.`, type: 'success', autoClose: 4000 });
    } catch (error) {
      Notification.update({ id, message: `Could not add ${request.address}: ${(error as Error).message}`, type: 'error', autoClose: 10000 });
    }
    this.changed();
  }

  /** Forget a Ray cluster added by address; it keeps running. */
  async remove(cluster: ICluster): Promise<void> {
    try {
      await requestAPI<void>(`ray/${cluster.cluster_id}`, { method: 'DELETE' });
      Notification.success(`Removed ${cluster.head_address} from the list; the Ray cluster keeps running.`, { autoClose: 4000 });
    } catch (error) {
      Notification.error(`Could not remove ${cluster.head_address}: ${(error as Error).message}`, { autoClose: 8000 });
    }
    this.changed();
  }

  /** List the clusters idle for longer than `seconds` and stop them if the user agrees. */
  async stopIdle(idle: ICluster[], seconds: number): Promise<void> {
    if (!idle.length) {
      Notification.info(`No cluster has been idle for ${duration(seconds)}.`, { autoClose: 4000 });
      return;
    }
    const body = document.createElement('ul');
    body.className = 'nbc-idle-list';
    for (const c of idle) {
      const li = document.createElement('li');
      li.textContent = `${c.head_address}: idle ${duration(c.idle_seconds ?? 0)}${c.owner.kind === 'kernel' ? `, owned by ${c.owner.path}` : ''}`;
      body.append(li);
    }
    const answer = await showDialog({
      title: `Stop ${idle.length} cluster(s) idle for more than ${duration(seconds)}?`,
      body: new Widget({ node: body }),
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Stop them' })]
    });
    if (answer.button.accept) {
      await this.stopQuietly(idle);
    }
  }

  private async stopQuietly(clusters: ICluster[]): Promise<void> {
    for (const c of clusters) {
      try {
        await requestAPI<void>(`clusters/${c.cluster_id}`, { method: 'DELETE' });
        Notification.success(`Stopped the cluster at ${c.head_address}.`, { autoClose: 4000 });
      } catch (error) {
        Notification.error(`Could not stop ${c.head_address}: ${(error as Error).message}`, { autoClose: 8000 });
      }
    }
    this.changed();
  }
}
